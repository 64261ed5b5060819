"""Outbound and inbound webhooks.

``signing`` builds the signed body and headers of one delivery (Standard Webhooks plus the
seeds' ``X-Webhook-*`` headers); ``retry`` is the pure retry and auto-disable policy. Both are
pure: no I/O, no clock, no database; time and randomness are passed in.
"""
