"""The vertical applications and the composition root (`apps.cli`, later `apps.suite`)."""
