"""Kopf handlers and the loops; importing `kopf_handlers` registers the handlers with Kopf."""
