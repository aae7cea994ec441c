"""kubenas: Kubernetes-native neural architecture and hyperparameter search."""
