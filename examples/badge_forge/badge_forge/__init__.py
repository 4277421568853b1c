"""Badge Forge: an Elixir app asks Python for conference badges and prints them itself.

``badge_forge.generator.GenerateBadge`` is the Python worker (queue ``badges``);
``badge_forge.render`` draws the PNG. See the README beside this package.
"""
