"""Code assist: a self-hosted code-completion service (fill-in-the-middle, repository context,
syntax checks) with a Tabby-compatible API, and an evaluation harness for any model."""
