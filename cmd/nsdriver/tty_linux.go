package main

import "syscall"

// ioctlReadTermios reads a terminal's settings.
const ioctlReadTermios = syscall.TCGETS
