"""What image metadata is made of and bounded by, wherever it comes from: the media types that say an
image's kind, and the limits on its platforms and size. Its own module, importing nothing, so that a
provider's listing (`watcher.registry.said`) can check what it heard without loading the OCI client that
`watcher.registry.imagemeta` reads verified bytes with."""

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
IMAGE_MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
#: every manifest kind watcher reads, as it asks for them (a request's Accept)
MANIFEST_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST)
#: the config media types of a runnable image; any other config makes the manifest an artifact
IMAGE_CONFIG_TYPES = frozenset(
    {"application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"}
)
#: the longest os/architecture/variant kept, and the most platforms an index records
MAX_PLATFORM_FIELD = 64
MAX_PLATFORMS = 128
#: the largest size believed (a BIGINT's range, less a margin for the sum)
MAX_SIZE = 2**62
