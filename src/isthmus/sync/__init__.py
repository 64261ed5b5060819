"""Pulling records in: sync runs of integrations, and what schedules them."""
