"""The node as a requestor: one association layer used by send, export, priors and MPPS."""
