"""An order workflow owned by Python with one step run by the Elixir app (the warehouse)."""
