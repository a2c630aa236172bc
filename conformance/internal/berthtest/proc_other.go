//go:build !linux

package berthtest

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }
