"""The ``rbot`` command (``main.py``): the composition root."""
