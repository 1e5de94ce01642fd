"""Tests of the Prefect flows (flows/)."""
