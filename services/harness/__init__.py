"""The test and chaos harness: scratch databases and vhosts, the pipeline as processes on ports
of their own, injected faults and the verdict. The test suite, the benchmarks and `nps chaos` use
it; the running product never imports it."""
