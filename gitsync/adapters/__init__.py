"""The real adapters behind ``gitsync.ports``: the only modules that import Kubernetes, Git or HTTP libraries.

For example ``kube.KubeCluster`` is the Kubernetes API (``ports.Cluster`` and ``ports.LiveReader``) and
``state.ConfigMapStateStore`` keeps per app-env state in ConfigMaps (``ports.StateStore``). Each adapter is tested
against a real server (kubelab, real Git repositories, HTTP on 127.0.0.1), never a fake of itself.
"""
