"""The lab: a Kubernetes cluster on one machine, built from network namespaces.

It plays kubelet and CNI (pods are namespaces wired to their node with veths)
and the API server (it maintains the manifests directory the agents watch).
"""
