"""eval.py's modes besides `test`: mode name -> fn(module, saved config, data config, cfg)."""

from lm_lab.eval import icl, probes

MODES = {"icl": icl.run, "length": probes.run}
