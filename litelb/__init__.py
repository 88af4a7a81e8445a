"""litelb: a highly available Kubernetes control-plane VIP on VMware NSX-T."""

__version__ = "0.1.0"
