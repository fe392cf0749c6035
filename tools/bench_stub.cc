namespace amber::cli { struct Args; int CmdBench(const Args&) { return 2; } }
