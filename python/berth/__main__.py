"""``python -m berth``: demo, serve, deploy, inspect, sign.

>>> main(["--version"])  # doctest: +ELLIPSIS
berth 0.1.0
0
"""
import sys

USAGE = """usage: python -m berth COMMAND [ARGS]

commands:
  demo     train the seed model, save it, run it from C, deploy it and serve it
  serve    serve a TorchScript model over the Open Inference Protocol (HTTP, from C)
  deploy   write a Docker build context and Kubernetes manifests for a model
  inspect  what berth knows of a model file: format, signature, metadata, sha256
  sign     embed a signature (--input/--output) into a plain TorchScript file

`python -m berth COMMAND --help` describes each command."""


def main(argv=None):
    """Run the command named in argv (default: sys.argv[1:]); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "--version":
        from ._version import __version__
        print(f"berth {__version__}")
        return 0
    if command == "demo":
        from .demo import main as run
    elif command == "serve":
        from .serving import main as run
    elif command == "deploy":
        from .deployment import main as run
    elif command == "inspect":
        from .inspection import inspect_main as run
    elif command == "sign":
        from .inspection import sign_main as run
    else:
        print(f"berth: unknown command {command!r}; expected demo, serve, deploy, inspect or sign\n\n{USAGE}", file=sys.stderr)
        return 2
    return run(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
