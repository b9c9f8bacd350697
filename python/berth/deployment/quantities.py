"""Kubernetes resource quantities (``cpu: 500m``, ``memory: 1Gi``), checked before use.

The grammar is Kubernetes' own (``k8s.io/apimachinery/pkg/api/resource``): a signed
decimal number followed by a binary suffix (Ki Mi Gi Ti Pi Ei), a decimal suffix
(n u m "" k M G T P E) or a decimal exponent (e3, E-2).

>>> parse_quantity("500m")
Fraction(1, 2)
>>> parse_quantity("1Gi") == 2**30
True
>>> cpu_quantity("1"), memory_quantity("512Mi")
('1', '512Mi')
"""
import re
from fractions import Fraction

_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000),
            "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}


def parse_quantity(text, argument="quantity"):
    """Return the exact value of a Kubernetes quantity string as a Fraction."""
    if not isinstance(text, str):
        raise TypeError(f"{argument}: expected a Kubernetes quantity string such as "
                        f"'500m' or '1Gi', got {type(text).__name__} {text!r}")
    match = _QUANTITY.match(text)
    if not match:
        raise ValueError(f"{argument}: expected a Kubernetes quantity such as '500m', "
                         f"'2' or '1Gi', got {text!r}")
    value = Fraction(match["number"])
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        value *= _BINARY[suffix]
    elif suffix in _DECIMAL:
        value *= _DECIMAL[suffix]
    elif suffix:
        value *= Fraction(10) ** int(suffix[1:])
    return value


def cpu_quantity(text, argument="cpu"):
    """Check a CPU quantity: positive, at least 1m (Kubernetes' CPU resolution).

    >>> cpu_quantity("0")
    Traceback (most recent call last):
    ...
    ValueError: cpu: expected a CPU quantity of at least 1m (e.g. '500m', '1', '2'), got '0'
    """
    value = parse_quantity(text, argument)
    if value < Fraction(1, 1000):
        raise ValueError(f"{argument}: expected a CPU quantity of at least 1m "
                         f"(e.g. '500m', '1', '2'), got {text!r}")
    return text


def memory_quantity(text, argument="memory"):
    """Check a memory quantity: a whole number of bytes, at least 64Mi for a server.

    >>> memory_quantity("1GBx")
    Traceback (most recent call last):
    ...
    ValueError: memory: expected a Kubernetes quantity such as '500m', '2' or '1Gi', got '1GBx'
    """
    value = parse_quantity(text, argument)
    if value.denominator != 1:
        raise ValueError(f"{argument}: expected a whole number of bytes "
                         f"(e.g. '512Mi', '1Gi'), got {text!r}")
    if value < 64 * 2**20:
        raise ValueError(f"{argument}: expected at least 64Mi (the model server and "
                         f"libtorch need more), got {text!r}")
    return text
