"""A small, deterministic YAML emitter for Kubernetes manifests.

Emits block-style YAML for dicts (insertion order kept), lists, strings, ints, bools
and None. A string is written plain only when it cannot be read back as anything but
that string; otherwise it is double-quoted with JSON escapes (a JSON string is a valid
YAML double-quoted scalar). Multi-line text ending in one newline becomes a literal
block (``|``). Same input, same bytes.

>>> print(dump({"kind": "Service", "spec": {"ports": [{"port": 80, "name": "http"}]}}), end="")
kind: Service
spec:
  ports:
    - port: 80
      name: http
>>> print(dump({"a": "true", "b": "1Gi", "c": [], "d": True}), end="")
a: "true"
b: "1Gi"
c: []
d: true
"""
import json
import re

_PLAIN = re.compile(r"^[A-Za-z/][A-Za-z0-9_./@:+-]*$")
_RESERVED = {"y", "yes", "n", "no", "true", "false", "on", "off", "null", "nan", "inf"}
_INDENT = "  "


def _scalar(value):
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if _PLAIN.match(value) and value.lower() not in _RESERVED and not value.endswith(":"):
            return value
        return json.dumps(value, ensure_ascii=False)
    raise TypeError(f"value: expected str, int, bool, None, dict or list, "
                    f"got {type(value).__name__} {value!r}")


def _is_block_text(value):
    return (isinstance(value, str) and "\n" in value and value.endswith("\n")
            and not value.endswith("\n\n") and not value.startswith((" ", "\n"))
            and all(ch == "\n" or (ch.isprintable() and ch != "\t") for ch in value)
            and not any(line != line.rstrip(" ") for line in value.split("\n")))


def _emit(value, indent, lines, key_prefix):
    """Append the lines for ``value``; ``key_prefix`` is "key:" or "-" already placed."""
    pad = _INDENT * indent
    if isinstance(value, dict) and value:
        if key_prefix is not None:
            lines.append(pad + key_prefix)
            indent += 1
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"key: expected str, got {type(key).__name__} {key!r}")
            _emit_item(_scalar(key) + ":", item, indent, lines)
    elif isinstance(value, list) and value:
        if key_prefix is not None:
            lines.append(pad + key_prefix)
            indent += 1
        for item in value:
            _emit_item("-", item, indent, lines)
    else:
        text = "{}" if isinstance(value, dict) else "[]" if isinstance(value, list) else None
        lines.append(pad + ((key_prefix + " ") if key_prefix else "")
                     + (text if text is not None else _scalar(value)))


def _emit_item(prefix, item, indent, lines):
    pad = _INDENT * indent
    if prefix == "-" and isinstance(item, dict) and item:
        # "- first: value" then the other keys aligned under "first".
        sub = []
        _emit(item, 0, sub, None)
        lines.append(pad + "- " + sub[0])
        lines.extend(pad + _INDENT + line for line in sub[1:])
    elif prefix == "-" and isinstance(item, list) and item:
        lines.append(pad + "-")
        _emit(item, indent + 1, lines, None)
    elif _is_block_text(item):
        lines.append(pad + prefix + " |")
        lines.extend((pad + _INDENT + line) if line else "" for line in item[:-1].split("\n"))
    elif isinstance(item, (dict, list)) and item:
        _emit(item, indent, lines, prefix)
    else:
        _emit(item, indent, lines, prefix)


def dump(document):
    """Return one YAML document for ``document`` (a dict or list), ending in a newline."""
    lines = []
    _emit(document, 0, lines, None)
    return "\n".join(lines) + "\n"
