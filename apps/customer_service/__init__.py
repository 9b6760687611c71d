"""Customer service: the contact-centre agent console on the suite's model.

For each customer message: the intent (or out of scope, for a person), the key fields, the
knowledge-base passages that answer it, suggested replies and a drafted reply streamed from the
engine; every step stored with its latency. `api.py` mounts the `/cs` router in the suite's app,
`ui.py` is the Streamlit console, `commands.py` the `verticals cs` commands. See the README.
"""
