"""Packages and money: the store side of hub/domain/money (services, statement renderers)."""
