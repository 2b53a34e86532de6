"""A stand-in kubelet for `make demo`: runs the containers of held Job pods on this machine.

kwok simulates pods but runs nothing. For the demo, the operator's Job pods carry the annotation
`sim.speculators.ai/hold: "true"`; this runner takes each such pod, runs its init containers and its
container *on this machine* with the project's own `speculators` CLI (the image is ignored: the runtime
image is this virtual environment), maps the pod's volumes to local directories (a PVC to the hostPath of
the PersistentVolume that kube-controller-manager's host-path provisioner bound it to, an emptyDir to a
private directory), and releases the pod with its real outcome: exit code and termination message, which
the operator then reads exactly as it would from a kubelet.
"""
