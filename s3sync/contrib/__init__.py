"""Integrations with frameworks; each is an optional extra, and the core never imports them."""
