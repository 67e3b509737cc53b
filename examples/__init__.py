"""Worked examples (importable from the repository's root: ``examples.gpt_port.adapter:make_adapter``)."""
