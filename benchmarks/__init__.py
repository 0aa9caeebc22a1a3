"""The report CLI (``tinyreport``: params, MACs, peak SRAM, flash vs board budgets) and the
toolchain's own performance benchmarks."""
