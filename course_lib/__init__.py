"""Delivery Semantics Lab."""
