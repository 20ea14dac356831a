// The kk command-line interface arrives with issue 3; until then `npm run demo` shows the library.
export const CLI_PENDING = 'the kk CLI is built in issue 3';
