"""What the "Add a registry" form asks of each kind of registry: its fields, each with a one-line hint of
where to find the value (the README's provider sections say more)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["text", "password", "file"]
#: fields whose value is a secret: never rendered back into a form or a page
SECRET_FIELDS = frozenset({"password", "secret_key", "client_secret", "json_key"})


@dataclass(frozen=True)
class Field:
    name: str  # the key `watcher.registrations.forms.build_spec` (and the `registry apply` YAML) knows
    label: str
    hint: str
    kind: Kind = "text"
    placeholder: str = ""
    group: str = ""  # a heading for alternatives (ACR's two ways to sign in)


@dataclass(frozen=True)
class Provider:
    key: str  # the `provider` value
    title: str
    fields: tuple[Field, ...]

    def field_names(self) -> frozenset[str]:
        return frozenset(f.name for f in self.fields)


def _url(example: str, hint: str) -> Field:
    return Field("url", "Registry URL", hint, placeholder=example)


PROVIDERS: tuple[Provider, ...] = (
    Provider(
        "ecr",
        "AWS ECR",
        (
            _url(
                "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com",
                "ACCOUNT.dkr.ecr.REGION.amazonaws.com with https://, as in the ECR console's repository URIs.",
            ),
            Field(
                "access_key",
                "Access key ID",
                "IAM → Users → your user → Security credentials → Create access key (AKIA…).",
                placeholder="AKIA…",
            ),
            Field(
                "secret_key",
                "Secret access key",
                "Shown once, next to the access key ID, when the key is created.",
                kind="password",
            ),
            Field(
                "region",
                "Region",
                "Optional: the region in the URL (e.g. eu-west-1); if given it must match.",
                placeholder="eu-west-1",
            ),
        ),
    ),
    Provider(
        "acr",
        "Azure ACR",
        (
            _url(
                "https://NAME.azurecr.io",
                "The registry's login server, shown on its Overview page in the Azure portal.",
            ),
            Field(
                "username",
                "Username",
                "A service principal's appId, the admin user (Access keys) or a repository-scoped token's name.",
                group="With a username and password",
            ),
            Field(
                "password",
                "Password",
                "The service principal's password, an admin password (Access keys) or the token's password.",
                kind="password",
                group="With a username and password",
            ),
            Field(
                "tenant_id",
                "Tenant ID",
                "'tenant' in the output of az ad sp create-for-rbac --role AcrPull.",
                group="Or with Azure AD (a service principal)",
            ),
            Field(
                "client_id",
                "Client ID",
                "'appId' in the same output (Microsoft Entra ID → App registrations).",
                group="Or with Azure AD (a service principal)",
            ),
            Field(
                "client_secret",
                "Client secret",
                "'password' in the same output (App registrations → Certificates & secrets).",
                kind="password",
                group="Or with Azure AD (a service principal)",
            ),
        ),
    ),
    Provider(
        "gcr",
        "Google GCR / Artifact Registry",
        (
            _url(
                "https://gcr.io",
                "https://gcr.io (or eu./us./asia.gcr.io), or Artifact Registry's https://REGION-docker.pkg.dev.",
            ),
            Field(
                "project_id",
                "Project ID",
                "The project that owns the images, shown in the console's project picker.",
                placeholder="my-project",
            ),
            Field(
                "json_key",
                "Service-account JSON key",
                "IAM → Service accounts → Keys → Add key → JSON; the account needs Artifact Registry Reader.",
                kind="file",
            ),
        ),
    ),
    Provider(
        "dockerhub",
        "Docker Hub",
        (
            Field("username", "Username", "Your Docker Hub user, or an organisation's name for its access token."),
            Field(
                "password",
                "Password or access token",
                "Account settings → Personal access tokens → Generate new token (Read-only).",
                kind="password",
            ),
            Field(
                "namespace",
                "Namespace",
                "The user or organisation to watch; defaults to the username.",
                placeholder="myorg",
            ),
        ),
    ),
    Provider(
        "oci",
        "Harbor / any OCI registry",
        (
            _url(
                "https://harbor.example.com",
                "The host you docker pull from, with https:// (GHCR, Quay, GitLab, Harbor…).",
            ),
            Field(
                "username",
                "Username",
                "A robot account (Harbor: Projects → Robot Accounts) or a user; empty for anonymous access.",
            ),
            Field(
                "password",
                "Password or token",
                "The robot's secret (shown once when it is created) or an access token.",
                kind="password",
            ),
        ),
    ),
)
BY_KEY = {p.key: p for p in PROVIDERS}
DEFAULT = "oci"
COMMON_FIELDS = frozenset({"name", "provider", "interval", "repositories"})


def provider(key: str | None) -> Provider:
    return BY_KEY.get(key or "", BY_KEY[DEFAULT])
