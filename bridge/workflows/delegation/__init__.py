"""One step across the language line: a Python body for an Elixir workflow's step (:mod:`.host`)
and an Elixir body for a Python step (:mod:`.elixir`), completed through the owner's own door
(:mod:`.door`) under the protocol in :mod:`.protocol`; :mod:`.lifeline` applies failure policy."""
