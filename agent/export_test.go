package agent

// CodeFor exposes codeFor to the tests.
var CodeFor = codeFor
