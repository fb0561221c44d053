"""How a run ends and stops: signal handling for every process, the crash-test stall seam."""
