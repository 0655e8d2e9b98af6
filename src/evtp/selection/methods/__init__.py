"""Built-in selection methods, one module each; importing a module registers its method(s)."""
from evtp.selection.methods import attention, dart, dpp, evtp, kcenter, random, tome, uniform  # noqa: F401
