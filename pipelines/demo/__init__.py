"""The demo: real data shipped with the installed libraries, each with a real shift
(`datasets`), and live traffic with people against a running API (`simulate`).

`from pipelines import demo` gives the datasets' public names (`demo.demo_split`,
`demo.records`, …).
"""

from pipelines.demo.datasets import *  # noqa: F403
from pipelines.demo.datasets import __all__ as __all__
