"""gunicorn config file for the bare hop with its workers bound to CPUs as the mediator's are.

Binding is how the process is run, not what a request does; the hop bound the same way tells
how much of the mediator's ratio to the bare hop is the binding's (BENCHMARKS.md).
"""

from mediator.serving import cpu_binding_hooks
from tests.benchmarks.procs import WORKERS

globals().update(cpu_binding_hooks("on", WORKERS))
