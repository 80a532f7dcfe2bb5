#!/usr/bin/env python3
"""Prints the command names of main.c's table, one per line: the man pages
meson generates (src/cli/meson.build) follow the table without a second
list to keep in step."""
import pathlib
import re
import sys

text = pathlib.Path(sys.argv[1]).read_text()
table = re.search(r"kiln_command \*const commands\[\] = \{(.*?)\n\};", text, re.S).group(1)
for name in re.findall(r"&kiln_cmd_(\w+)", table):
    print(name.replace("_", "-"))
