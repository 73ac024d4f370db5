"""The real adapters behind ``gitsync.ports``: the only modules that import Kubernetes, Git or HTTP libraries.

``kube.KubeCluster`` is the Kubernetes API (``ports.Cluster`` and ``ports.LiveReader``); ``state.ConfigMapStateStore``
keeps per app-env state in ConfigMaps (``ports.StateStore``). Both are tested against a real kube-apiserver.
"""
