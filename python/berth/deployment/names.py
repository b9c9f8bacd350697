"""Kubernetes object names: RFC 1123 DNS labels.

A name is used as a Deployment, Service, container and label value, so it must be a
DNS-1123 label: at most 63 characters, lowercase letters, digits and ``-``, starting
and ending with a letter or digit.

>>> sanitize_name("my_model")
'my-model'
>>> sanitize_name("Fraud.Detector v2")
'fraud-detector-v2'
>>> is_dns1123_label("my-model"), is_dns1123_label("my_model")
(True, False)
"""
import re

MAX_LABEL_LENGTH = 63
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_INVALID_RUN = re.compile(r"[^a-z0-9]+")


def is_dns1123_label(text):
    """True when ``text`` is a valid RFC 1123 label (Kubernetes' DNS label)."""
    return isinstance(text, str) and len(text) <= MAX_LABEL_LENGTH and bool(_LABEL.match(text))


def sanitize_name(raw, argument="name"):
    """Return ``raw`` turned into an RFC 1123 label, or raise ValueError.

    Lowercases, turns every run of other characters into one ``-`` and trims ``-``
    from both ends. A name with no letter or digit, or longer than 63 characters once
    sanitized, is refused rather than silently truncated (truncation could make two
    models share one name).

    >>> sanitize_name("___")
    Traceback (most recent call last):
    ...
    ValueError: name: expected a name with at least one letter or digit (RFC 1123 label), got '___'
    """
    if not isinstance(raw, str):
        raise TypeError(f"{argument}: expected a string, got {type(raw).__name__} {raw!r}")
    candidate = _INVALID_RUN.sub("-", raw.lower()).strip("-")
    if not candidate:
        raise ValueError(
            f"{argument}: expected a name with at least one letter or digit "
            f"(RFC 1123 label), got {raw!r}")
    if len(candidate) > MAX_LABEL_LENGTH:
        raise ValueError(
            f"{argument}: expected at most {MAX_LABEL_LENGTH} characters once made an "
            f"RFC 1123 label, got {len(candidate)} ({candidate!r} from {raw!r})")
    return candidate
