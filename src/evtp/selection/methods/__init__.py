"""Built-in selection methods, one module each; importing a module registers its method(s)."""
import importlib

for _name in ("kcenter", "random", "uniform", "attention", "dpp", "tome", "dart"):
    try:
        importlib.import_module(f"evtp.selection.methods.{_name}")
    except ModuleNotFoundError as e:  # a method module not written yet
        if e.name != f"evtp.selection.methods.{_name}":
            raise
