// Package element reads diskimage-builder (DIB) compatible elements and turns
// a list of requested element names into a validated, ordered build plan.
//
// It implements DIB's contracts exactly where elements depend on them:
// ELEMENTS_PATH lookup (earlier entries win, overrides are reported),
// element-deps expanded transitively, element-provides including the virtual
// "operating-system", phase directories whose executable hooks run sorted the
// way dib-run-parts sorts them (numeric prefix first), environment.d files,
// package-installs.yaml/.json and pkg-map.
//
// Everything that can be wrong with an element set (a missing dependency, two
// providers of one name, no operating-system element, one hook name shipped by
// two elements, a dependency cycle, a malformed package-installs file) is
// reported here, before anything runs, with the elements involved named.
//
// This package only reads element directories. It never runs a hook, writes
// outside a directory it is given, or knows about chroots and disks.
package element
