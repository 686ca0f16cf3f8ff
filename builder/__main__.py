from builder.cli import console_main

console_main()
