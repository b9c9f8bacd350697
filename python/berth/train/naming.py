"""Looking up layers, losses, metrics, optimizers and activations by name.

Every lookup that fails says which argument was wrong, what it received, what
is accepted, and suggests the closest valid name.

>>> lookup("activation", "rleu", {"relu": 1, "tanh": 2})
Traceback (most recent call last):
...
ValueError: activation: unknown name 'rleu'; did you mean 'relu'? Valid names: relu, tanh
"""

import difflib

__all__ = ["lookup", "closest"]


def closest(name, choices):
    """Return the valid name closest to ``name``, or ``None`` when nothing is near.

    >>> closest("adma", ["adam", "sgd"])
    'adam'
    >>> closest("zzz", ["adam", "sgd"]) is None
    True
    """
    found = difflib.get_close_matches(str(name).lower(), list(choices), n=1, cutoff=0.5)
    return found[0] if found else None


def lookup(argument, name, table):
    """Return ``table[name]`` (case-insensitive) or raise a ``ValueError`` naming ``argument``.

    >>> lookup("loss", "MSE", {"mse": "mean squared"})
    'mean squared'
    """
    if not isinstance(name, str):
        raise TypeError(f"{argument}: expected a name (str), got {type(name).__name__} {name!r}")
    key = name.lower()
    if key in table:
        return table[key]
    hint = closest(key, table)
    did_you_mean = f"; did you mean '{hint}'?" if hint else "."
    raise ValueError(
        f"{argument}: unknown name '{name}'{did_you_mean} Valid names: {', '.join(sorted(table))}"
    )
