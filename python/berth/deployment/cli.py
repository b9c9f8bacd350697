"""The command line: ``python -m berth deploy MODEL|REPO/ --name NAME [options]``."""
import argparse
import sys

EXIT_USAGE = 2


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m berth deploy",
        description="Write a container build context (Dockerfile, model, berth source) and "
                    "Kubernetes manifests for serving a TorchScript model or .pt2 package (saved by "
                    "berth, or a plain torch.jit.save file), or a model repository "
                    "(REPO/<model>/<version>/model.pt[2], optional REPO/<model>/config.toml).")
    parser.add_argument("model_path", metavar="MODEL",
                        help="model file (.pt, .pt2) or model repository directory")
    parser.add_argument("--name",
                        help="Kubernetes name (default: the file name without its extension, or "
                             "the repository directory's name; made an RFC 1123 label: "
                             "my_model -> my-model)")
    parser.add_argument("--input", action="append", metavar="NAME:DATATYPE:SHAPE",
                        dest="inputs",
                        help="a plain file's input, e.g. image:FP32:-1,3,224,224 (-1: any "
                             "extent; repeat in forward's order); embedded as its signature "
                             "(a repository's models give theirs in config.toml)")
    parser.add_argument("--output", action="append", metavar="NAME:DATATYPE:SHAPE",
                        dest="outputs", help="a plain file's output, likewise (optional)")
    parser.add_argument("--library", action="append", metavar="PATH", dest="libraries",
                        help="a library of custom operators the model needs (repeatable), "
                             "built against the image's libtorch; copied into the image, "
                             "which loads it before the model")
    parser.add_argument("--out", metavar="DIR", help="output directory (default: ./NAME-deploy)")
    parser.add_argument("--image", metavar="REPO/NAME[:TAG]",
                        help="image reference (default tag: the model's sha256 prefix, or the "
                             "repository's digest prefix)")
    parser.add_argument("--replicas", type=int, default=2, help="initial replicas (default 2)")
    parser.add_argument("--cpu", default="1", help="CPU request and limit (default 1)")
    parser.add_argument("--memory", default="1Gi", help="memory request and limit (default 1Gi)")
    parser.add_argument("--min-replicas", type=int, help="HPA minimum (default: --replicas)")
    parser.add_argument("--max-replicas", type=int, help="HPA maximum (default: 10)")
    parser.add_argument("--target-cpu", type=int, default=70,
                        help="HPA target CPU utilization in percent (default 70)")
    parser.add_argument("--namespace", help="Kubernetes namespace")
    parser.add_argument("--kserve", action="store_true",
                        help="also write a KServe InferenceService (k8s/kserve/)")
    parser.add_argument("--service-monitor", action="store_true",
                        help="also write a Prometheus Operator ServiceMonitor")
    parser.add_argument("--grafana", action="store_true",
                        help="also write a Grafana dashboard ConfigMap")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing non-empty output directory")
    return parser


def main(argv=None):
    """Run the deploy CLI; returns the exit code (0, or 2 on bad input)."""
    from .build import deploy
    args = build_parser().parse_args(argv)
    try:
        context = deploy(args.model_path, args.name, out=args.out, image=args.image,
                         replicas=args.replicas, cpu=args.cpu, memory=args.memory,
                         min_replicas=args.min_replicas, max_replicas=args.max_replicas,
                         target_cpu=args.target_cpu, namespace=args.namespace,
                         kserve=args.kserve, service_monitor=args.service_monitor,
                         grafana=args.grafana, force=args.force, inputs=args.inputs,
                         outputs=args.outputs, libraries=args.libraries)
    except (ValueError, TypeError, OSError, RuntimeError) as exc:
        print(f"berth deploy: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"berth deploy: wrote {context.out} ({len(context.files)} files)")
    for name, versions in context.models:
        print(f"  model:   {name} (version {', '.join(map(str, versions))})")
    print(f"  image:   {context.image}")
    print(f"  build:   docker build -t {context.image} {context.out}")
    print(f"  apply:   kubectl apply -k {context.out}/k8s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
