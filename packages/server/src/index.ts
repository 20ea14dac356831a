// The kk server arrives with issue 5.
export const SERVER_PENDING = 'the kk server is built in issue 5';
