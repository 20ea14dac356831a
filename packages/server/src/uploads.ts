// Upload sessions of the seed's publish API (`/upload/init`, `PUT /file/...`, `/upload/finish`):
// rows in the control database (@kk/control), so any instance can take the next request of a session.
export { Uploads, type DeclaredFile, type FinishedUpload, type UploadSession } from '@kk/control';
