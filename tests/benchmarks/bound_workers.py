"""gunicorn config file for the bare hop with its workers bound to CPUs as the mediator's are.

Binding is how the process is run, not what a request does; the hop bound the same way tells
how much of the mediator's ratio to the bare hop is the binding's (BENCHMARKS.md). Both use the
mediator's default rule (`auto`), so on a machine with more CPUs than workers neither is bound.
"""

from mediator.serving import cpu_binding_hooks
from tests.benchmarks.procs import CPU_BINDING, WORKERS

globals().update(cpu_binding_hooks(CPU_BINDING, WORKERS))
