"""The Kubernetes backend: kopf handlers that carry Experiments through the planner's decisions.

``handlers`` holds every kopf decorator; ``reconcile`` observes one experiment's children,
calls ``kubenas.plan`` and applies its actions through ``apply`` and the ``kube`` client.
"""
