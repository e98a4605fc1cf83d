from seqcl.cli import entry

entry()
