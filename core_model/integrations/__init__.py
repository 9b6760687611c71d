"""Adapters from the engine to other frameworks' interfaces (LangChain). Each imports its framework lazily."""
