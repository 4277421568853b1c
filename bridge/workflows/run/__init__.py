"""Running Python-owned workflows as HephaestusOban does: the runner and its three job kinds, the
workers a node registers, and repair / the lifeline for instances left stuck."""
