"""Checking ``berth deploy``'s options; every error names the argument, what was
expected and what was received, and is raised before anything is written.

>>> split_image("registry.example.com:5000/team/fraud:0a1b2c3d4e5f")
('registry.example.com:5000/team/fraud', '0a1b2c3d4e5f', None)
>>> image_reference(None, "my-model", "0a1b2c3d4e5f6789")
'my-model:0a1b2c3d4e5f'
>>> image_reference("ghcr.io/acme/fraud", "fraud", "0a1b2c3d4e5f6789")
'ghcr.io/acme/fraud:0a1b2c3d4e5f'
"""
import re
from dataclasses import dataclass

from .names import is_dns1123_label

TAG_LENGTH = 12
_DOMAIN = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*(?::[0-9]+)?"
_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"^(?:{_DOMAIN}/)?{_PATH}(?:/{_PATH})*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$")


@dataclass(frozen=True)
class DeployOptions:
    """Validated options, as the emitters use them."""
    name: str
    image: str
    version: str          # app.kubernetes.io/version: the model's sha256 prefix
    replicas: int
    min_replicas: int
    max_replicas: int
    target_cpu: int
    cpu: str
    memory: str
    namespace: str
    kserve: bool
    service_monitor: bool
    grafana: bool
    tmp_size: str = "64Mi"  # the writable /tmp (emptyDir): a .pt2 is unpacked there


def split_image(image):
    """Split an image reference into (name, tag or None, digest or None), or raise."""
    problem = (f"image: expected an image reference like 'registry/team/name:tag' "
               f"(lowercase path, optional tag or @digest), got {image!r}")
    if not isinstance(image, str) or not image:
        raise ValueError(problem)
    rest, _, digest = image.partition("@")
    if digest and not _DIGEST.match(digest):
        raise ValueError(problem)
    name, tag = rest, None
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = rest.rsplit(":", 1)
        if not _TAG.match(tag):
            raise ValueError(problem)
    if not _NAME.match(name) or len(name) > 255:
        raise ValueError(problem)
    return name, tag, digest or None


def image_reference(image, name, model_sha256):
    """The image to build and run: the model's sha256 prefix as tag, never ``latest``."""
    default_tag = model_sha256[:TAG_LENGTH]
    if image is None:
        return f"{name}:{default_tag}"
    repo, tag, digest = split_image(image)
    if tag == "latest":
        raise ValueError(f"image: expected an immutable tag (default: the model's sha256 "
                         f"prefix {default_tag!r}), got {image!r}: ':latest' makes "
                         "rollbacks and cache behaviour unpredictable")
    if tag is None and digest is None:
        return f"{repo}:{default_tag}"
    return image


def positive_int(value, argument, low=1, high=None):
    """An int in [low, high]; bools and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{argument}: expected an integer, got {type(value).__name__} {value!r}")
    if value < low or (high is not None and value > high):
        span = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ValueError(f"{argument}: expected an integer {span}, got {value}")
    return value


def replica_range(replicas, min_replicas, max_replicas):
    """Check replicas and the autoscaler's range; fill the defaults.

    >>> replica_range(2, None, None)
    (2, 2, 10)
    >>> replica_range(2, 5, 3)
    Traceback (most recent call last):
    ...
    ValueError: min_replicas: expected at most max_replicas (3), got 5
    """
    positive_int(replicas, "replicas")
    low = replicas if min_replicas is None else positive_int(min_replicas, "min_replicas")
    high = max(10, low) if max_replicas is None else positive_int(max_replicas, "max_replicas")
    if low > high:
        raise ValueError(f"min_replicas: expected at most max_replicas ({high}), got {low}")
    if not low <= replicas <= high:
        raise ValueError(f"replicas: expected a count between min_replicas ({low}) and "
                         f"max_replicas ({high}), got {replicas}")
    return replicas, low, high


def namespace_name(namespace):
    """None, or an RFC 1123 label (namespaces are not silently renamed)."""
    if namespace is None:
        return None
    if not is_dns1123_label(namespace):
        raise ValueError(f"namespace: expected an RFC 1123 label (lowercase letters, digits "
                         f"and '-', at most 63 characters), got {namespace!r}")
    return namespace
