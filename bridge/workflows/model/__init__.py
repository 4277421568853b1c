"""The pure workflow model, as Hephaestus defines it: definitions, the instance, the engine, the
built-in steps and the exact serialised form. No I/O."""
