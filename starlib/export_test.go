package starlib

// Predeclared returns the names every recipe file sees, for tests.
var Predeclared = predeclared

// Builtins returns every builtin of every family, in help order, for tests.
func Builtins() []Builtin {
	var out []Builtin
	for _, f := range families {
		out = append(out, f.Builtins...)
	}
	return out
}
