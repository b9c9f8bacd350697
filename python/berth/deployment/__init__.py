"""``berth deploy``: from a saved model, or a model repository, to a container build
context and Kubernetes manifests that validate, build and serve.

>>> import berth.deployment, inspect
>>> list(inspect.signature(berth.deployment.deploy).parameters)[:3]
['model_path', 'name', 'out']

``deploy(...)`` writes one directory (see ``berth.deployment.context`` for its files):
a multi-stage ``Dockerfile`` that builds berth from source on Debian bookworm and
serves the model, ``model/``, ``berth-src/``, ``k8s/`` (Deployment, Service, HPA,
PodDisruptionBudget, kustomization; optional ServiceMonitor, Grafana dashboard and a
KServe InferenceService) and a ``README.md`` with the exact commands. Given a model
repository directory (``berth.repository``), the context holds ``repository/`` in place
of ``model/`` (see ``berth.deployment.repository_files``) and the image serves it all.
"""
from .build import BuildContext, deploy, tmp_size
from .cli import main

__all__ = ["deploy", "main", "BuildContext", "tmp_size"]
